"""The server end-to-end tests that check node values, errors and formats, against the in-process executor."""

from tests.test_comfyui import (  # noqa: F401  (collected here with this folder's in-process ``comfy`` fixture)
    broken,
    test_a_bf16_vlms_features_are_aligned_in_fp32,
    test_a_legacy_format_release_aligner_loads,
    test_a_vlm_that_does_not_fit_streams_its_layers_through_comfyuis_partial_loading,
    test_bad_input_is_reported_on_the_node_and_loses_nothing,
    test_clip_flux_conditioning_is_aligned_image_tokens_then_t5_with_clip_l_pooled,
    test_cogvideox_too_many_images,
    test_cogvideox_wrapper_embeds_drive_a_diffusers_pipeline,
    test_damaged_models_and_wrong_widths_fail_on_their_node_before_sampling,
    test_each_weight_format_thinks_close_to_the_default_and_is_sized_as_stored,
    test_lvlm_conditioning_is_the_aligned_features_then_t5_with_clip_l_pooled,
    test_stop_at_eos_ends_the_answer_at_the_end_token,
    test_the_vlm_and_aligner_are_evicted_when_another_model_needs_the_memory,
    test_without_a_clip_the_pooled_vector_is_exactly_zero,
)
