"""Framework adapters behind one declared Protocol; a rank imports exactly one framework."""
