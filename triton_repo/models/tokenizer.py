"""Turns text into the token ids of the model's own open_clip tokenizer (not a re-implementation).

The model is named as open_clip names it: a registered variant, or `local-dir:<folder>` (the bundled shapes
CLIP, whose config the repository renderer copies into this model's version folder: a relative folder is read from
there, so the repository works wherever it is mounted).

open_clip (and the torch it imports) must be installed in the Python the server runs this model with: the cpu
profile's venv has it; NVIDIA's Triton image does not, so docker-compose.gpu.yml builds it into its image.
Without it the model fails to load with a message saying so, instead of an ImportError traceback.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_repo.runtime.params import in_version_folder, model_config, parameters


class TritonPythonModel:
    def initialize(self, args):
        try:
            import open_clip
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                f"tokenizer needs open_clip_torch (and torch) in the Triton server's Python ({exc}); the gpu "
                "profile's image installs them (docker-compose.gpu.yml)") from exc
        params = parameters(model_config(args))
        self.tokenizer = open_clip.get_tokenizer(in_version_folder(params["open_clip_name"], args))
        self.context_length = int(params["context_length"])

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in raw]
            tokens = self.tokenizer(texts, context_length=self.context_length).numpy().astype(np.int64)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("tokens", tokens)]))
        return responses
