"""Inference transforms: named, registered rewrites of a built model (BN folding,
channels_last, bfloat16 …), one file each; :mod:`atrous.transforms.registry` lists and
applies them."""
