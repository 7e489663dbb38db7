"""FER2013 readers, decode cache, synthetic faces, transforms and the LightningDataModule."""
