"""The chaos soak (`python -m bench --chaos MINUTES`): profilesync under steady signups and a random fault
every 20 to 40 s, ending with an audit of what every user got."""
