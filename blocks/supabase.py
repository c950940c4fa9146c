"""SupabaseCredentials: a Prefect block holding a Supabase project URL and its service-role key."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class SupabaseCredentials(Block):
    """Credentials for a Supabase project; `get_client()` is the one place a supabase Client is built."""

    _block_type_name = "Supabase Credentials"
    _block_type_slug = "supabase-credentials"
    _description = "URL and service-role key of a Supabase project (the spotshift ledger)."

    url: str = Field(title="Project URL", description="e.g. https://<project>.supabase.co")
    key: SecretStr = Field(title="API key", description="service-role key; writes bypass nothing but RLS policies")

    def get_client(self):
        """A supabase-py Client for this project."""
        from supabase import create_client

        return create_client(self.url, self.key.get_secret_value())
