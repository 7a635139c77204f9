"""Whole photos in, whole photos out (``anon photos``): every face found, anonymised and pasted back.

The public names are re-exported here: ``from anon.photos import Anonymizer``.
"""
from anon.photos.anonymizer import Anonymizer, FaceAnonymizer, IdentityFaceAnonymizer
from anon.photos.falco_faces import FalcoFaceAnonymizer

__all__ = ['Anonymizer', 'FaceAnonymizer', 'IdentityFaceAnonymizer', 'FalcoFaceAnonymizer']
