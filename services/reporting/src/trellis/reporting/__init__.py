"""Trellis reporting: ClickHouse sink and teacher and district reports."""
