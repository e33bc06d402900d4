"""synth.data: image sources, preprocessing and the Lightning DataModule that every run uses.

`SynthDataModule` (datamodule.py) is what conf/data/*.yaml instantiates; sources.py lists and decodes
subjects (readers.py: files and headers); intensity.py maps values to [-1, 1] and back by named presets;
geometry.py resamples volumes onto one grid; transforms.py applies both, slices and augments; splits.py and
blocks.py decide the split (by subject key, or blocks of one volume); phantom.py draws procedural brains.
"""

from synth.data.datamodule import SynthDataModule
from synth.data.phantom import make_phantom, write_fake_brats
from synth.data.readers import Subject, Volume
from synth.data.sources import MNI152, Phantom, Source
from synth.data.user_sources import BraTS, CSVList, Folder
from synth.data.splits import split_subjects

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
