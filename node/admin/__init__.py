"""Operator commands of the command line: ls, delete, echo, init."""
