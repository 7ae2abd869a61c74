"""Pixel work done on the server: decoding attachments, depth normalization, canny, encoding results."""
