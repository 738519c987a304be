"""The trellis console script: dispatches to the services' commands."""
