"""synth.data: image sources, preprocessing and the Lightning DataModule that every run uses.

`SynthDataModule` (datamodule.py) is what conf/data/*.yaml instantiates; sources.py lists and decodes
subjects; transforms.py normalises/slices/resizes/augments; phantom.py draws procedural brains.
"""

from synth.data.datamodule import SynthDataModule, split_subjects
from synth.data.phantom import make_phantom, write_fake_brats
from synth.data.readers import Subject, Volume
from synth.data.sources import MNI152, BraTS, CSVList, Folder, Phantom, Source

__all__ = [
    "SynthDataModule",
    "split_subjects",
    "make_phantom",
    "write_fake_brats",
    "Source",
    "Subject",
    "Volume",
    "MNI152",
    "Phantom",
    "BraTS",
    "CSVList",
    "Folder",
]
