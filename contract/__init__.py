"""The numpy-only contract that search, exits and bundle share (cost models in :mod:`contract.costs`).

Imports numpy and nothing of the project, so every side (and a deployment target) can import it.
"""
