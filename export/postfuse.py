"""ObjectClear's PostfuseModule: maps the CLIP object embedding to one prompt-token row.

Written from the architecture description (objectclear.md section 4); parameter names follow the released
`postfuse_module/model.safetensors` so those weights load unchanged. Its config is read and written with diffusers'
ConfigMixin, as the released `postfuse_module/config.json` was: {"_class_name": "PostfuseModule", "embed_dim": 2048,
"embed_dim_img": 768}; the metadata keys are not constructor arguments.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS = "model.safetensors"
FP16_WEIGHTS = "model.fp16.safetensors"  # the variant the Hub repository carries beside the fp32 file


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


class PostfuseModule(nn.Module, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, embed_dim: int = 2048, embed_dim_img: int = 768):
        super().__init__()
        self.mlp1 = PostfuseMLP(embed_dim_img, embed_dim, embed_dim, residual=False)
        self.mlp2 = PostfuseMLP(embed_dim, embed_dim, embed_dim, residual=True)
        self.layer_norm = nn.LayerNorm(embed_dim)

    def fuse_fn(self, object_embeds: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.mlp2(self.mlp1(object_embeds)))

    def save_pretrained(self, folder: Path) -> None:
        folder = Path(folder)
        self.save_config(folder)
        save_file(self.state_dict(), str(folder / WEIGHTS))

    @classmethod
    def from_pretrained(cls, folder: Path) -> "PostfuseModule":
        """fp32 weights; a folder holding only the fp16 variant is read upcast."""
        folder = Path(folder)
        module = cls.from_config(cls.load_config(folder))
        weights = folder / WEIGHTS if (folder / WEIGHTS).exists() else folder / FP16_WEIGHTS
        module.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
        return module.eval()
