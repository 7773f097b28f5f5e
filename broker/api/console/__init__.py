"""The Accord Console: server-rendered pages (GOV.UK Design System) for subscribers, publishers and governance
officers, and the public transparency page."""
