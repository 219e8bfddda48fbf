"""Buyer and vendor emails: rendering from templates, composing MIME messages, sending over SMTP."""
