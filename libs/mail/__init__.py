"""Pure e-mail helpers shared by submission (validation), router (MIME building) and policy (names)."""
