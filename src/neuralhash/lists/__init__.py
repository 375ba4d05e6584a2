"""Hash lists from elsewhere: their file formats and their audit."""
