"""Settings, flag strings and their precedence."""
