"""Every outbound effect of dunlink, each behind a small port with a real and an in-memory implementation."""
