"""cpu profile: the DALI dual-branch pipeline (the same definition the gpu profile serializes), run on CPU.

Each request's image is validated and decoded on its own, so an undecodable image fails only its request.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from preprocess.runtime import DaliPreprocessor
from preprocess.validate import PreprocessError
from triton_repo.runtime.params import model_config, parameters

OUTPUTS = ("yolo_input", "clip_input", "image_size", "letterbox", "decoded_image")


class TritonPythonModel:
    def initialize(self, args):
        config = model_config(args)
        params = parameters(config)
        self.preprocessor = DaliPreprocessor(
            clip_size=int(params["clip_size"]),
            mean=tuple(json.loads(params["clip_mean"])),
            std=tuple(json.loads(params["clip_std"])),
            interpolation=params["clip_interpolation"],
            yolo_size=int(params["yolo_size"]),
            pad_value=int(params["pad_value"]),
            max_pixels=int(params["max_pixels"]),
            num_threads=int(params.get("threads", "1")),
            batch_size=max(1, int(config.get("max_batch_size", 1))),
        )

    def execute(self, requests):
        images = [pb_utils.get_input_tensor_by_name(r, "encoded_image").as_numpy().reshape(-1).tobytes()
                  for r in requests]
        responses = []
        for result in self.preprocessor.run(images):
            if isinstance(result, PreprocessError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
                continue
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(getattr(result, name))[None]) for name in OUTPUTS]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
