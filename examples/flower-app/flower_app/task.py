"""flower-app: a Flower / PyTorch app."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

NUM_RECORDS, NUM_FEATURES, NUM_CLASSES, SEED = 2400, 32, 4, 42


class Net(nn.Module):
    """A small fully connected classifier."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(NUM_FEATURES, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def load_records():
    """Every record of the app's (synthetic, offline) dataset: features and labels."""
    rng = np.random.default_rng(SEED)
    centres = rng.normal(0, 1, (NUM_CLASSES, NUM_FEATURES))
    y = rng.integers(0, NUM_CLASSES, NUM_RECORDS)
    x = centres[y] + rng.normal(0, 2.5, (NUM_RECORDS, NUM_FEATURES))
    return x.astype(np.float32), y.astype(np.int64)


def partition_indices(partition_id: int, num_partitions: int):
    """The records of one partition: 80% to train on, 20% to validate on."""
    order = np.random.default_rng(SEED + 1).permutation(NUM_RECORDS)
    mine = np.array_split(order, num_partitions)[partition_id]
    cut = int(0.8 * len(mine))
    return mine[:cut], mine[cut:]


def load_data(partition_id: int, num_partitions: int):
    """Load partition data."""
    x, y = load_records()
    train, val = partition_indices(partition_id, num_partitions)
    trainloader = DataLoader(TensorDataset(torch.from_numpy(x[train]), torch.from_numpy(y[train])),
                             batch_size=32, shuffle=True)
    valloader = DataLoader(TensorDataset(torch.from_numpy(x[val]), torch.from_numpy(y[val])),
                           batch_size=64)
    return trainloader, valloader


def train(net, trainloader, epochs, lr, device):
    """Train the model on the training set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for x, y in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net, testloader, device):
    """Validate the model on the test set."""
    net.to(device)
    criterion = torch.nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    net.eval()
    with torch.no_grad():
        for x, y in testloader:
            outputs = net(x.to(device))
            loss += criterion(outputs, y.to(device)).item()
            correct += (torch.max(outputs.data, 1)[1] == y.to(device)).sum().item()
    return loss / len(testloader), correct / len(testloader.dataset)
