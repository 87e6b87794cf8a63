"""Roles: one module per concern, each exposing one pyinfra @deploy function."""
