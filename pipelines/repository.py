"""Which Triton models each public model needs loaded: itself and every model it calls through BLS. With explicit
model control Triton loads nothing a BLS call will reach, so servers started for one public model load this list."""
from __future__ import annotations

from pipelines import flux, objectclear, sam3
from pipelines.progress import STREAM_SUFFIX, STREAMED

_FILL = ["flux_fill_inpaint", *flux.FILL_MODELS.values()]
_GENERATE = {model: [model, *flux.generate_models(variant).values()] for variant, model in flux.GENERATORS.items()}
NEEDS = {
    "objectclear_inpaint": ["objectclear_inpaint", *objectclear.COMPONENT_MODELS.values(), *_FILL],  # ENGINE flux_fill
    "remove_object": ["remove_object", *objectclear.COMPONENT_MODELS.values(), *sam3.COMPONENT_MODELS.values(),
                      *_FILL],
    "sam3_segment": ["sam3_segment", *sam3.COMPONENT_MODELS.values()],
    **_GENERATE,
    "flux_generate": ["flux_generate", *_GENERATE[flux.GENERATORS[flux.DEFAULT_VARIANT]]],  # an ensemble over it
    "flux_fill_inpaint": _FILL,
}
# each streaming twin (server/streaming.py) runs its public model's adapter, so it needs what that model needs
NEEDS.update({model + STREAM_SUFFIX: [model + STREAM_SUFFIX, *NEEDS[model]] for model in STREAMED})


def needed(*public: str) -> list[str]:
    """Every model that these public models need loaded, each once."""
    return sorted({model for name in public for model in NEEDS[name]})
