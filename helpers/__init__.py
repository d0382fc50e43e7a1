"""CNN Hooks Lab helpers: record activations with hooks and turn them into pictures.

The notebooks import from here; each module has one job:

* ``hooks``   — ``ActivationRecorder``, ``conv_layers``, ``hooks_on``, ``firing_trace``
* ``models``  — ``load_resnet34`` (pretrained, cached, local file or seeded random), ``pick_device``
* ``images``  — ``sample_image_path``, ``load_image``, ``preprocess``
* ``viz``     — ``feature_grid``, ``show_feature_maps``, ``fingerprint`` (a printed summary of a picture)
* ``attribution`` — ``grad_cam``, ``gradient_saliency``, ``overlay``, ``top_k``
* ``stats``   — per-layer activation statistics
* ``explorer`` — fast rendering of feature-map pages for the explorer (no widgets)
* ``diagrams`` — the BasicBlock data-flow diagram, drawn from the block itself
* ``exercises`` — ``unfinished``, the "not done yet" check of fill-in exercises
* ``toydata`` — ``gabor_patches``, ``gabor``, ``train_and_test``, ``small_cnn``, ``initialize`` (notebook 07's offline data and CNN)
* ``training`` — ``TrainingRecorder`` (per-step summaries, never the activations), ``fit``, ``accuracy``, ``one_thread``, plots
* ``sanity`` — ``spearman``, ``cascading_randomization``
* ``interventions`` — ``ablate``, ``patch`` (hooks that change a module's output), ``mean_activation``
* ``topk`` — ``StreamingTopK`` (each channel's top examples in bounded memory), ``channel_peaks``, ``receptive_field``
* ``featurevis`` — ``visualize`` (optimise an input through a hook), ``dominant_orientation``
* ``widgets`` — ``feature_explorer``, the interactive explorer (imported on demand: it needs ipywidgets)
"""

from .hooks import ActivationRecorder, conv_layers, firing_trace, format_trace, hooks_on
from .images import ImageLoadError, load_image, preprocess, sample_image_path, to_displayable
from .models import WeightsError, imagenet_categories, load_resnet34, pick_device, weights_info
from .viz import feature_grid, fingerprint, n_pages, show_feature_maps

__all__ = [
    "ActivationRecorder",
    "ImageLoadError",
    "WeightsError",
    "conv_layers",
    "feature_grid",
    "fingerprint",
    "firing_trace",
    "format_trace",
    "hooks_on",
    "imagenet_categories",
    "load_image",
    "load_resnet34",
    "n_pages",
    "pick_device",
    "preprocess",
    "sample_image_path",
    "show_feature_maps",
    "to_displayable",
    "weights_info",
]
