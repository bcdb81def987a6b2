"""Sources of records: one pure parser per format, and the readers around them."""
