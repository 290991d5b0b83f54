"""Reading pixels: images as viewers show them, stacks and volumes a page at a time, masks decoded to class ids, class tables. Imports: segnet.utils."""
