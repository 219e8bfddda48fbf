"""CopeCart: its signed JSON IPN read into domain events, and what is owed rebuilt from its IPNs alone."""
