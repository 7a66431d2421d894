"""Pure parsers: file bytes → one canonical, validated table. No I/O beyond the bytes given."""
