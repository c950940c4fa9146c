"""MongoDBCredentials: a Prefect block holding a MongoDB connection string and database name."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class MongoDBCredentials(Block):
    """Credentials for a MongoDB deployment; `get_client()` is the one place a MongoClient is built."""

    _block_type_name = "MongoDB Credentials"
    _block_type_slug = "mongodb-credentials"
    _description = "Connection string and database of the MongoDB that holds spotshift's jobs."

    connection_string: SecretStr = Field(
        title="Connection string", description="mongodb:// or mongodb+srv:// URI; may embed a password"
    )
    database: str = Field(default="spotshift", title="Database", description="database holding the jobs")

    def get_client(self, **kwargs):
        """A pymongo MongoClient (tz-aware datetimes); extra kwargs go to MongoClient."""
        from pymongo import MongoClient

        kwargs.setdefault("tz_aware", True)
        return MongoClient(self.connection_string.get_secret_value(), **kwargs)

    def get_database(self, **kwargs):
        """The configured pymongo Database."""
        return self.get_client(**kwargs)[self.database]
