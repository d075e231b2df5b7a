"""The server's OpenAPI document, generated from the live route table."""
