"""Where GPU capacity can be had and at what price: offer queries, live AWS and trace replay markets."""
