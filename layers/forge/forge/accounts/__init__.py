"""What an account's owner manages with a management key: keys, projects, and the audit trail
every change leaves (forge.accounts.keys, forge.accounts.projects)."""
