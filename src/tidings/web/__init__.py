"""Pages for people: the dashboard and the development mailbox."""
