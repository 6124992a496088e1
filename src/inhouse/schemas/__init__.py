"""Pydantic wire models; class names follow the components of the official OpenAPI spec."""
