"""Data in: adapters that write the raw contract (DATA_CONTRACT.md) from public datasets, the official
download of UCI Online Retail, and a synthetic shop of any size."""
