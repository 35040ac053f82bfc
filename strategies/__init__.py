"""Flower server side: the recording FedAvg and the malicious aggregators."""
