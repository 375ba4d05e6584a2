"""Files in and out: finding images, writing outputs atomically, file names kept as bytes."""
