"""Prefect blocks: the only place clients for Supabase, MongoDB and AWS are built."""

from blocks.aws import aws_credentials_from_settings, load_aws_credentials
from blocks.mongodb import MongoDBCredentials
from blocks.supabase import SupabaseCredentials

__all__ = ["MongoDBCredentials", "SupabaseCredentials", "aws_credentials_from_settings", "load_aws_credentials"]
