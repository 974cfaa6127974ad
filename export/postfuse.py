"""ObjectClear's PostfuseModule: maps the CLIP object embedding to one prompt-token row.

Written from the architecture description (objectclear.md section 4); parameter names follow the released
`postfuse_module/model.safetensors` so those weights load unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class PostfuseMLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, residual: bool):
        super().__init__()
        self.layernorm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.act_fn = nn.GELU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act_fn(self.fc1(self.layernorm(x))))
        return x + y if self.residual else y


class PostfuseModule(nn.Module):
    def __init__(self, embed_dim: int = 2048, embed_dim_img: int = 768):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "embed_dim_img": embed_dim_img}
        self.mlp1 = PostfuseMLP(embed_dim_img, embed_dim, embed_dim, residual=False)
        self.mlp2 = PostfuseMLP(embed_dim, embed_dim, embed_dim, residual=True)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def fuse_fn(self, object_embeds: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.mlp2(self.mlp1(object_embeds)))

    def save_pretrained(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.config))
        save_file(self.state_dict(), str(folder / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, folder: Path) -> "PostfuseModule":
        folder = Path(folder)
        module = cls(**json.loads((folder / "config.json").read_text()))
        weights = folder / "model.safetensors"
        if not weights.exists():
            weights = folder / "model.fp16.safetensors"
        module.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
        return module.eval()
