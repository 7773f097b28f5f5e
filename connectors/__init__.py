"""Source and sink connectors that move data between outside systems and Accord streams."""
