"""Flower client side: honest participants and malicious ones."""
