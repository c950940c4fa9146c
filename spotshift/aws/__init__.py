"""AWS adapters: thin boto3 calls that take their clients as arguments, with typed errors."""
