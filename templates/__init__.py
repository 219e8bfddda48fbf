"""Email templates and their translation catalogs, shipped as package data so installs need no checkout."""
