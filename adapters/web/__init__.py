"""What ``dunlink api`` shows people in a browser: the vendor page of a case, rendered from typed contexts, and
the signed tokens that make its address."""
