"""``python -m distrec.kernels``: build the native kernels for this machine (``make setup`` runs it)."""

from distrec.kernels import main

main()
