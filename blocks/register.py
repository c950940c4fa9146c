"""Save spotshift's credential blocks from settings: `python -m blocks.register` (or `make blocks`)."""

from __future__ import annotations

import sys

from blocks.aws import DEFAULT_BLOCK_NAME, aws_credentials_from_settings
from blocks.mongodb import MongoDBCredentials
from blocks.supabase import SupabaseCredentials
from spotshift.settings import Settings


def blocks_from_settings(settings: Settings) -> dict:
    """The blocks settings describe, keyed by system: aws always, mongodb and supabase if configured."""
    found: dict = {"aws": aws_credentials_from_settings(settings)}
    if settings.mongodb_url is not None:
        found["mongodb"] = MongoDBCredentials(
            connection_string=settings.mongodb_url, database=settings.mongodb_database
        )
    if settings.supabase_url and settings.supabase_key is not None:
        found["supabase"] = SupabaseCredentials(url=settings.supabase_url, key=settings.supabase_key)
    return found


def register_blocks(settings: Settings, overwrite: bool = True, name: str = DEFAULT_BLOCK_NAME) -> dict[str, str]:
    """Save every configured block as document `name`; return system -> "<block-type-slug>/<name>"."""
    saved: dict[str, str] = {}
    for system, block in blocks_from_settings(settings).items():
        block.save(name, overwrite=overwrite)
        saved[system] = f"{block.get_block_type_slug()}/{name}"
    return saved


def main(argv: list[str] | None = None) -> int:
    for system, ref in register_blocks(Settings()).items():
        print(f"saved {system}: {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
