"""mango.data"""
