"""Malekzadeh & Gündüz: a vicious classifier F trained jointly with a decoder G, and its detection."""
