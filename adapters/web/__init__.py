"""What ``dunlink api`` serves to people rather than platforms: the vendor page and its tokens."""
