"""Sources: a publisher's files, HTTP endpoints and databases published into a stream through Accord's API."""
