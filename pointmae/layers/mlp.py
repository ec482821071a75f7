from torch import nn


class Mlp(nn.Module):
    """The transformer feed-forward layer: Linear -> GELU -> Linear."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int = None, drop: float = 0.0):
        super().__init__()
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
