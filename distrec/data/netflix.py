"""placeholder, replaced below"""
SPECS = []
