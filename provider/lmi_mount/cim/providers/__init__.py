"""One module per class family of the Mounting Model."""
