"""Pure e-mail helpers shared by submission (validation) and router (MIME building)."""
