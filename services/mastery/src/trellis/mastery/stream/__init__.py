"""The mastery stream processor: a Faust app, its topics, tables and agents (STYLE.md §3)."""
